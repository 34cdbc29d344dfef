from effopt.cli import main

raise SystemExit(main())
