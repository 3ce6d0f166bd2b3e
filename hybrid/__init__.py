"""hybrid: a regional LSTM encoder with per-catchment random-forest decoders for streamflow.

The pipeline flows one way: load -> canonical catchment tables -> windows -> encoder ->
encoded Parquet -> decoders -> metrics -> summary/report. Every stage is a plain function;
Ray only decides where the stages run.
"""

__version__ = "0.1.0"
