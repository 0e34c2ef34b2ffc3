-- The demo dataset `exportd up` creates so the demo exports have real rows
-- (daemon/db/demo.py is the only caller). Idempotent.

-- name: demo_schema
CREATE SCHEMA IF NOT EXISTS demo;
CREATE TABLE IF NOT EXISTS demo.orders (
    order_id   integer PRIMARY KEY,
    owner_id   text NOT NULL,
    placed_at  timestamptz NOT NULL,
    status     text NOT NULL,
    item       text NOT NULL,
    quantity   integer NOT NULL,
    total      numeric(10, 2) NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_owner_idx ON demo.orders (owner_id, placed_at)

-- name: demo_seed
-- 2 000 orders spread over the last year for each owner given.
INSERT INTO demo.orders (order_id, owner_id, placed_at, status, item, quantity, total)
SELECT o.n * 100000 + i,
       o.owner,
       now() - make_interval(hours => i * 4),
       (ARRAY['paid', 'shipped', 'delivered', 'refunded'])[1 + i %% 4],
       (ARRAY['notebook', 'pencil', 'backpack', 'lamp', 'mug', 'chair'])[1 + i %% 6],
       1 + i %% 5,
       round((3 + (i * 37) %% 200)::numeric * 1.19, 2)
FROM unnest(%(owners)s::text[]) WITH ORDINALITY AS o(owner, n),
     generate_series(1, 2000) AS i
ON CONFLICT (order_id) DO NOTHING
