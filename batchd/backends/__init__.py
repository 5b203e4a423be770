"""Backends: one protocol (`base.BatchBackend`), one module per vendor batch API
(`openai_batch`, `anthropic_batch`, with `claude_messages` translating chat bodies (helped
by `claude_turns`, `claude_content`, `claude_tools`, `claude_features`) and Claude's
automatic `prompt_cache`), `schema_check` (schema_valid for every backend's answers), the
synchronous clients of the deadline guard (`openai_sync`: flex and standard tiers,
`anthropic_sync`: the Messages API, answering `sync_call.SyncReply`), and the self-hosted
vLLM subsystem in `vllm/`. A backend encodes a chunk's lines, creates, polls, collects and
cancels one batch, and answers with outcomes.

May import: state, storage, config and the core modules.
"""
