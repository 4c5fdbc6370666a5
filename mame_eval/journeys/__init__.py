"""The run layer: one function per journey between the faces (CLI, Streamlit) and the
calculations (metrics, xai, stats). Each validates its inputs, calls calculations, and returns
a :class:`~mame_eval.journeys.record.RunRecord` written in one layout with a ``run.json``.
"""
