from converter.cli.main import main

raise SystemExit(main())
