-- The registry's keys are gone with it (clients publish them again after a roll-forward).
DROP TABLE chat_user_keys;
