from ecokit.cli import run

run()
