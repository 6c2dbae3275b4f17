from .quick import main

raise SystemExit(main())
