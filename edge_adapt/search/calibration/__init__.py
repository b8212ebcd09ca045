"""The calibrated models adaptive search reads (the PRM's answer model, the generator's vote
model), their fitting and the replays that judge them. Offline fitting is used by ``calibrate``,
``bench`` and the tools; search reads the models. Nothing is imported here.
"""
