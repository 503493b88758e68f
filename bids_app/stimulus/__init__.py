"""Stimulus timing: word timings of a story and the story's onset inside a run.

Word timings are read from any of the formats datasets ship (:func:`read_word_timings`
picks the reader from the file name and header):

* Gentle forced-aligner output, as used by the Narratives dataset
  (``stimuli/gentle/<task>/align.csv`` or ``align.json``): :func:`read_gentle_csv`,
  :func:`read_gentle_json`;
* a Praat TextGrid word tier (e.g. from the Montreal Forced Aligner):
  :func:`read_textgrid`;
* a word table with a header, TSV or CSV, with word/onset/offset (or duration) columns, as
  in the Le Petit Prince dataset: :func:`read_word_table`;
* BIDS ``*_events.tsv`` rows with ``trial_type == "word"``: :func:`read_events_words`.

Except for events files, times are in seconds from the start of the story's audio;
:func:`story_onset_s` gives the offset of the story inside a BOLD run, read from the run's
``*_events.tsv``. Events-file word onsets are already on the run's clock (story onset 0).
:func:`check_within_run` checks that the words fit inside the run (or, for a story split
over several runs, that some of them do).

Words an aligner could not place in the audio are kept, because the language model needs
them as context. Their times are filled in by linear interpolation over word position
between the nearest aligned words before and after them; before the first aligned word
(after the last one) they take that word's onset and offset (constant extrapolation, i.e.
clamping). The ``aligned`` mask says which times were measured and which were filled in.

Modules: :mod:`.timings` (:class:`WordTimings` and the checks all readers share),
:mod:`.gentle`, :mod:`.textgrid`, :mod:`.tables` (word tables and events files),
:mod:`.formats` (format detection), :mod:`.placement` (story onset and audio file, run
check) and :mod:`.audio` (a story's WAV file and its amplitude envelope).
"""

from bids_app.stimulus.audio import audio_envelope, read_wav, rms_envelope, usable_audio
from bids_app.stimulus.formats import read_word_timings
from bids_app.stimulus.gentle import read_gentle_csv, read_gentle_json
from bids_app.stimulus.placement import check_within_run, story_onset_s, story_stim_file
from bids_app.stimulus.tables import read_events_words, read_word_table
from bids_app.stimulus.textgrid import read_textgrid
from bids_app.stimulus.timings import WordTimings

__all__ = [
    "WordTimings",
    "read_word_timings",
    "read_gentle_csv",
    "read_gentle_json",
    "read_textgrid",
    "read_word_table",
    "read_events_words",
    "story_onset_s",
    "story_stim_file",
    "check_within_run",
    "audio_envelope",
    "read_wav",
    "rms_envelope",
    "usable_audio",
]
