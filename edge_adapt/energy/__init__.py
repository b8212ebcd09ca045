"""Power and energy meters (NVML, Jetson INA3221, RAPL, battery) and the fallback estimate."""

from edge_adapt.energy.cost_model import DEFAULT_COST_MODELS, CostModel, CostSample, Usage, fit_cost_model
from edge_adapt.energy.detect import METER_KINDS, MeterAvailability, detect_meters, open_meter
from edge_adapt.energy.meters import EnergyReading, EstimateMeter, Meter

__all__ = [
    "DEFAULT_COST_MODELS",
    "METER_KINDS",
    "CostModel",
    "CostSample",
    "EnergyReading",
    "EstimateMeter",
    "Meter",
    "MeterAvailability",
    "Usage",
    "detect_meters",
    "fit_cost_model",
    "open_meter",
]
