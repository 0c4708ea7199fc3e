"""Adapter training (paper section 4.2): the multi-view dataset format (``dataset``), the trainer and its
checkpoints (``train``, ``checkpoint``), the readers of public multi-view captures and their converter
(``captures``), and the dataset command line that wires the two (``cli``)."""
