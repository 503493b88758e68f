"""Reading the input dataset (:mod:`.layout`) and writing the derivatives (:mod:`.derivatives`)."""
