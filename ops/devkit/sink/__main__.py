from ops.devkit.sink.server import main

raise SystemExit(main())
