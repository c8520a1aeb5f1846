"""A FastAPI app of the usual shape, for the memory benchmark: pydantic models, SQLAlchemy models
and an engine, a handful of routes, a /health route and lifespan.

The engine stands for a database server: it connects only when /orders is called, which the
benchmark does not do (an in-memory database would be private data in every worker).

Only the benchmark uses it (bench/requirements.txt); the worker-class tests use examples/apps.
"""

from __future__ import annotations

import datetime
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import ForeignKey, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customer"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    orders: Mapped[list[Order]] = relationship(back_populates="customer")


class Order(Base):
    __tablename__ = "order"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    total_cents: Mapped[int]
    customer: Mapped[Customer] = relationship(back_populates="orders")


class OrderIn(BaseModel):
    customer: str = Field(min_length=1, max_length=80)
    total_cents: int = Field(ge=0)


class OrderOut(BaseModel):
    id: int
    customer: str
    total_cents: int
    created: datetime.datetime


engine = create_engine("sqlite://")


@asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.started = datetime.datetime.now()
    yield
    engine.dispose()


app = FastAPI(title="bench", lifespan=lifespan)


@app.get("/health")
def health() -> dict:
    return {"status": "ok", "pid": os.getpid()}


@app.get("/")
def index() -> dict:
    return {"app": "bench-fastapi", "pid": os.getpid()}


@app.post("/orders", response_model=OrderOut)
def create_order(order: OrderIn) -> OrderOut:
    with Session(engine) as session:
        customer = session.scalars(select(Customer).where(Customer.name == order.customer)).first()
        if customer is None:
            raise HTTPException(404, "no such customer")
        row = Order(customer=customer, total_cents=order.total_cents)
        session.add(row)
        session.commit()
        return OrderOut(id=row.id, customer=customer.name, total_cents=row.total_cents, created=datetime.datetime.now())
