"""The ad platforms the destination emulator speaks beyond Meta and Google, one module each: how
the platform's requests look, what it checks of them and how it answers (dialect.py)."""
from audience_relay.testing.emulators.platforms import linkedin, pinterest, snapchat, tiktok, x

DIALECTS = (tiktok.DIALECT, snapchat.DIALECT, linkedin.DIALECT, x.DIALECT, pinterest.DIALECT)
