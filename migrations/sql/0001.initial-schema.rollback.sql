DROP TABLE IF EXISTS chat_message_outbox;
DROP TABLE IF EXISTS chat_messages;
DROP TABLE IF EXISTS chat_participants;
DROP TABLE IF EXISTS chat_sessions;
