from .cli.quick import main

raise SystemExit(main())
