from krabfast.cli.app import main

raise SystemExit(main())
