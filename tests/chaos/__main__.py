from tests.chaos.driver import main

raise SystemExit(main())
