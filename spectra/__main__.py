"""``python -m spectra`` runs the same CLI as the ``spectra`` console script."""

from spectra_cli.app import main

if __name__ == "__main__":
    main()
