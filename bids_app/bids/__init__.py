"""Reading the input dataset and writing the derivatives: discovery (:mod:`.layout`,
:mod:`.acquisitions`), the naming contract (:mod:`.naming`), sidecars, image helpers, writers
(:mod:`.outputs`, :mod:`.derivatives`) and readers of the participant outputs."""
