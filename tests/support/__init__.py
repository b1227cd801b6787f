"""What the test modules share, none of it a test: signals and media files made at test time
(`helpers`, `fake_media`), hand-built records (`fake_records`), the session's one random VGG-Face
file (`weights`) and the tiny trained models (`trained`). The fixtures that hand them out live in
`tests/conftest.py`; test modules import from here, never from one another.
"""
