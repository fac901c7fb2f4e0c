"""What the tests, the benchmarks and the demo check the product against (the `testing` extra).

`emulators/`: local stand-ins for the destinations and services (the Meta- and Google-like HTTP
APIs, an OpenSSH SFTP server, a moto server, PostgreSQL); `reference.py`: the independent
plain-Python computation of what prepare must produce.
"""
