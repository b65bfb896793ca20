"""Python SQL agents driven side by side with Quarry (`quarry eval peers`).

Usage:
    python agents.py {langchain|langgraph} --base-url URL --db-uri URI
        [--schema tate] QUESTION [QUESTION ...]

Each question is asked once, in order, of a fresh agent over one
OpenAI-compatible model at URL (the scripted model of `quarry eval peers`),
then the script exits. The agents are built as their projects document them:

- ``langchain``: LangChain's SQL agent,
  ``langchain_community.agent_toolkits.create_sql_agent(llm, db=db,
  agent_type="tool-calling")`` (its docstring's recommended agent type),
  run with ``invoke({"input": question})``.
- ``langgraph``: LangGraph's SQL agent as in LangGraph's tutorial "Build a
  SQL agent", section "1. Use a prebuilt agent"
  (https://langchain-ai.github.io/langgraph/tutorials/sql/sql-agent/, now
  https://docs.langchain.com/oss/python/langgraph/sql-agent):
  ``create_react_agent(llm, SQLDatabaseToolkit(db=db, llm=llm).get_tools(),
  prompt=SYSTEM_PROMPT)`` with the tutorial's system prompt (below, with
  ``top_k=5`` as there), run with ``stream(..., stream_mode="values")`` as
  the tutorial does.

Both use ``ChatOpenAI(base_url=URL, api_key="x", model="scripted")`` with
its defaults otherwise (LangChain's agent executor streams the model's
replies; LangGraph's ``stream`` drives the model through ``invoke``), and
``SQLDatabase.from_uri(URI, schema=SCHEMA)``.

Per question one line goes to stdout: ``{"question": ..., "answer": ...}``
(JSON), or ``{"question": ..., "error": ...}`` when the agent failed.
"""

from __future__ import annotations

import argparse
import json
import sys

from langchain_community.agent_toolkits import SQLDatabaseToolkit, create_sql_agent
from langchain_community.utilities import SQLDatabase
from langchain_openai import ChatOpenAI
from langgraph.prebuilt import create_react_agent

# The system prompt of LangGraph's SQL-agent tutorial ("Build a SQL agent",
# "1. Use a prebuilt agent"), formatted there with the database's dialect
# and top_k=5.
SYSTEM_PROMPT = """
You are an agent designed to interact with a SQL database.
Given an input question, create a syntactically correct {dialect} query to run,
then look at the results of the query and return the answer. Unless the user
specifies a specific number of examples they wish to obtain, always limit your
query to at most {top_k} results.

You can order the results by a relevant column to return the most interesting
examples in the database. Never query for all the columns from a specific table,
only ask for the relevant columns given the question.

You MUST double check your query before executing it. If you get an error while
executing a query, rewrite the query and try again.

DO NOT make any DML statements (INSERT, UPDATE, DELETE, DROP etc.) to the
database.

To start you should ALWAYS look at the tables in the database to see what you
can query. Do NOT skip this step.

Then you should query the schema of the most relevant tables.
"""


def langchain_agent(llm: ChatOpenAI, db: SQLDatabase):
    executor = create_sql_agent(llm, db=db, agent_type="tool-calling")

    def ask(question: str) -> str:
        return str(executor.invoke({"input": question})["output"])

    return ask


def langgraph_agent(llm: ChatOpenAI, db: SQLDatabase):
    tools = SQLDatabaseToolkit(db=db, llm=llm).get_tools()
    prompt = SYSTEM_PROMPT.format(dialect=db.dialect, top_k=5)
    agent = create_react_agent(llm, tools, prompt=prompt)

    def ask(question: str) -> str:
        last = None
        for step in agent.stream(
            {"messages": [{"role": "user", "content": question}]},
            stream_mode="values",
        ):
            last = step["messages"][-1]
        return "" if last is None else str(last.content)

    return ask


AGENTS = {"langchain": langchain_agent, "langgraph": langgraph_agent}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("agent", choices=sorted(AGENTS))
    parser.add_argument("--base-url", required=True, help="OpenAI-compatible base URL (…/v1)")
    parser.add_argument("--db-uri", required=True, help="SQLAlchemy URI, e.g. postgresql+psycopg2://…")
    parser.add_argument("--schema", default="tate")
    parser.add_argument("questions", nargs="+")
    args = parser.parse_args()

    db = SQLDatabase.from_uri(args.db_uri, schema=args.schema)
    failed = 0
    for question in args.questions:
        # a fresh model client and agent per question: no state carries over
        llm = ChatOpenAI(base_url=args.base_url, api_key="x", model="scripted")
        ask = AGENTS[args.agent](llm, db)
        try:
            line = {"question": question, "answer": ask(question)}
        except Exception as error:  # noqa: BLE001 - reported per question
            failed += 1
            line = {"question": question, "error": f"{type(error).__name__}: {error}"}
        print(json.dumps(line), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
