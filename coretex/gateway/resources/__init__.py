"""REST resources, one flask-smorest Blueprint each (``<name>/routes.py`` + ``<name>/schemas.py``)."""
