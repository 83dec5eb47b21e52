"""Chat with the literature: streamed, grounded answers with linked, expandable citations."""

from __future__ import annotations

from typing import Any

import streamlit as st

from agent.ask import Answer, stream_answer
from app_pages import resources
from app_pages.render import escape_md, linked_answer
from core.errors import RetestError

HISTORY_KEY = "chat_messages"


def _show_answer(answer: dict[str, Any]) -> None:
    """Render a finished answer: linked text, one expander per cited paper, removal notice."""
    cited = answer.get("cited", [])
    st.markdown(linked_answer(answer["text"], [c["arxiv_id"] for c in cited]))
    for paper in cited:
        when = paper.get("published") or "undated"
        with st.expander(f"arXiv:{paper['arxiv_id']} — {escape_md(paper['title'])}"):
            st.markdown(f"**{escape_md(paper['title'])}**  \n{escape_md(when)} · "
                        f"[arxiv.org/abs/{paper['arxiv_id']}]({paper['url']})")
            st.caption("Evidence sentence from the abstract (chosen by word overlap"
                       + (", citation attached by overlap)" if paper["how"] == "attributed"
                          else ")"))
            st.text(paper["evidence"])
    if answer.get("removed_ids"):
        st.warning(f"Removed {len(answer['removed_ids'])} citation(s) of papers that were not "
                   f"retrieved: {escape_md(', '.join(answer['removed_ids']))}")
    if answer.get("model"):
        st.caption(f"{escape_md(answer['model'])} · {answer.get('seconds', 0):.1f} s · "
                   f"{len(answer.get('retrieved', []))} papers retrieved")


def render() -> None:
    """Draw the chat page."""
    st.header("Chat with the literature")
    messages: list[dict[str, Any]] = st.session_state.setdefault(HISTORY_KEY, [])
    if st.sidebar.button("New chat", key="new_chat"):
        messages.clear()
    for message in messages:
        with st.chat_message(message["role"]):
            if message.get("answer"):
                _show_answer(message["answer"])
            else:
                st.markdown(escape_md(message["content"]))
    question = st.chat_input("Ask about the papers in the store", max_chars=2000)
    if not question:
        return
    messages.append({"role": "user", "content": question})
    with st.chat_message("user"):
        st.markdown(escape_md(question))
    with st.chat_message("assistant"):
        current = resources.settings()
        draft = st.empty()
        shown = ""
        try:
            store, llm = resources.paper_store(current), resources.llm(current)
            final: Answer | None = None
            for item in stream_answer(question, current, llm=llm, store=store):
                if isinstance(item, Answer):
                    final = item
                else:
                    shown += item
                    draft.markdown(escape_md(shown) + " ▌")
        except RetestError as exc:
            draft.empty()
            st.error(escape_md(str(exc)))
            messages.append({"role": "assistant", "content": f"Error: {exc}"})
            return
        draft.empty()
        assert final is not None
        record = final.model_dump(mode="json")
        _show_answer(record)
        messages.append({"role": "assistant", "content": final.text, "answer": record})
