"""Robot-PC arm backends for physical arms: Franka (pylibfranka) and UR (ur_rtde), and the registry
that builds any backend, twins and vendor-API doubles included, for `robot-rl serve --backend`."""
