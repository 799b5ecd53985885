"""Human and scripted teleoperation: keyboard, SpaceMouse, scripted experts, and `robot-rl record`."""
