from edgeq.cli import run

run()
