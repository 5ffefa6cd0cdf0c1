-- The demo shop: customers and their orders, with the types a CDC loader must carry
-- exactly (NUMERIC, TIMESTAMPTZ, JSONB, TEXT).
CREATE TABLE customers (
    id          BIGSERIAL PRIMARY KEY,
    email       TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    id          BIGSERIAL PRIMARY KEY,
    customer_id BIGINT NOT NULL REFERENCES customers(id),
    amount      NUMERIC(12, 2) NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending',
    details     JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Deletes carry the whole before-image (floe also loads key-only deletes).
ALTER TABLE orders REPLICA IDENTITY FULL;

INSERT INTO customers (email, name)
SELECT 'customer' || i || '@example.com', 'Customer ' || i FROM generate_series(1, 20) AS i;

INSERT INTO orders (customer_id, amount, status, details)
SELECT 1 + (i % 20), round((random() * 500)::numeric, 2), 'pending',
       jsonb_build_object('items', 1 + i % 5, 'channel', 'web')
FROM generate_series(1, 100) AS i;
