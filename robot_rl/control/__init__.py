"""Robot-PC control: the impedance law, safety limits, the 1 kHz core and where it runs. No torch."""
