"""Comparison reports over finished run folders: reading runs (``runs``), tables and statistics, figures, and
rendering to Markdown/HTML (``render``); ``write`` puts them together (``nlpkit report``, and ``nlpkit run``
at its end). Reads run folders only: it never trains."""
