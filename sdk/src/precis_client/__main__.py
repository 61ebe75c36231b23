"""``python -m precis_client``: the ``precis`` CLI."""

from precis_client.cli import main

if __name__ == "__main__":
    main()
