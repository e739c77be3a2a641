from circuit.cli import main

raise SystemExit(main())
