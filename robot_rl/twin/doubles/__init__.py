"""Stand-ins for the vendor APIs (pylibfranka, ur_rtde, the Robotiq URCap socket), backed by twin
physics. They implement exactly the calls robot_rl's backends make, with the vendors' timing
contracts and injectable faults, so CI drives the real backend code without an arm;
tests/arms/test_vendor_api_drift.py checks every name and signature against the real wheels."""
