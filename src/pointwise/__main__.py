"""``python -m pointwise``: the same program as the ``pointwise`` console script."""

from pointwise.cli import main_entry

if __name__ == "__main__":
    main_entry()
