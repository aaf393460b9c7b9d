from latentgap.cli.main import main

raise SystemExit(main())
