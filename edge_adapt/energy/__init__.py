"""Power and energy meters (NVML, Jetson INA3221, RAPL, battery) and the fallback estimate."""

from edge_adapt.energy.detect import MeterAvailability, detect_meters

__all__ = ["MeterAvailability", "detect_meters"]
