from fluxserve.cli import main

raise SystemExit(main())
