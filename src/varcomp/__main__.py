"""``python -m varcomp``: the ``varcomp`` command line."""

from varcomp.analyses.cli import console

if __name__ == "__main__":
    console()
