"""The openai backend: OpenAI or any OpenAI-compatible fine-tuning service.

- `backend`: the `Backend` (training through a job, the model at the service, no export);
- `keys`: the API key and the client of the configured endpoint;
- `upload`: what is sent, checked and disclosed first, and the receipt;
- `jobs`: one job per dataset and parameters, followed to model.json;
- `service`: what a service offers (`FineTuneService`) and the poll loop;
- `client`: that service over the `openai` SDK, careful never to pay twice.
"""
