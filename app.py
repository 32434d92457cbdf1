"""Visual-RFT Studio: `python app.py` serves the web app; subcommands do the same headless."""
import sys

from ui.cli import main

if __name__ == "__main__":
    sys.exit(main())
