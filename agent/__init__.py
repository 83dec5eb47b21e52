"""The retest LangGraph agent: research prompt in, re-tested and cited report out."""
