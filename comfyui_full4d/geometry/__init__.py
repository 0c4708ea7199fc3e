"""Stage 1, geometry: the ``Camera`` / ``Rig`` types and THE conventions (``cameras``: OpenCV,
world-to-camera, scene units), rig presets and the App. B interpolation (``rig``, ``rig_plot``), Depth
Anything 3 on the source video (``depth``) giving the source ``Geometry`` (``source``), the SPEC 3
point-cloud projection into the rig (``projection``), DA3 on the generated views aligned to the rig
(``view_depth``, ``align``)."""
