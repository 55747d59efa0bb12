-- The micro-batch (sequences per forward/backward) a worker was using at a progress point;
-- smaller than requested after an out-of-memory retry. NULL for points of older workers.
ALTER TABLE progress ADD COLUMN micro_batch INTEGER;
