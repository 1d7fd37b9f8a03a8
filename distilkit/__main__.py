"""``python -m distilkit`` (and ``accelerate launch -m distilkit``) runs the CLI."""

from distilkit.cli import main

if __name__ == "__main__":
    main()
