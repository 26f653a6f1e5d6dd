from krabfast.cli import main

raise SystemExit(main())
