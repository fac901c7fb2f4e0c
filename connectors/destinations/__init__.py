"""One folder per destination, each of the same shape (shape.py): `profile.py` (its published limits
and identifier rules), `config.py` (the model of its `connection` config), `client.py` (its
requests, or its files), and in `__init__.py` the DESTINATION that connects a configured
destination to it. registry.py lists them; adding a destination is a folder beside these and one
line there.
"""
