"""Does it sound like its owner? Library code behind the `evaluate` stage.

- `heldout`: the held-out set by time (the newest conversations), chosen by the dataset stage.
- `replies`: the held-out replies (context and real reply) read back from heldout.jsonl.
- `stylometry`: a stylometric profile of a set of messages and a calibrated distance.
- `probe`: does the tuned model repeat private text (phone numbers, e-mails, addresses)?
- `measure`: the whole measurement over a base and a tuned `ChatModel`, as evaluation.json.
- `verdict`: one honest sentence from the figures.
- `plots`: inline SVG charts; `report`: the self-contained report.html.

Library code: nothing here prints, prompts or exits; progress goes through callbacks.
"""
