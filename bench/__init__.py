"""The side-by-side benchmark of mailgate and nginx's mail proxy (``bench/run.py``)."""
