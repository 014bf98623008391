"""Chat messages: idempotent send with a transactional outbox, history, unread, receipts."""
