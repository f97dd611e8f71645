"""The ``dclust`` command line (entry point :func:`dclust.cli.main.main`).

One module per command (``make_blobs``, ``fit``, ``predict``, ``info``); ``fit``
algorithms are ``fit_<name>.py`` modules found at run time, so adding one is one file.
"""
