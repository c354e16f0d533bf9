"""``python -m lit_ssl.cli`` is ``lit-ssl``."""

from lit_ssl.cli.main import main

raise SystemExit(main())
