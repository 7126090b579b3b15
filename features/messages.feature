@messages
Feature: Send a message
  A message is a command: the session's cell runs it in order, the model
  answers, and the answer is in the session's event log and in the
  command's result.  The local stack's model is the builtin one, which
  answers "You said: TEXT".

  Background:
    Given a token for tenant "acme"
    And "acme" has a session

  Scenario: The builtin model replies to a message
    When "acme" sends the message "hello"
    Then the command is accepted as "queued"
    And the command completes
    And its result text is "You said: hello"
    And the command has one "model.reply" event whose text is "You said: hello"
    And the command's events include, in this order:
      | command.received  |
      | command.started   |
      | model.reply       |
      | command.completed |
    And the session's event log is gapless

  Scenario: Messages run one after another, in the order they were sent
    When "acme" sends the message "first" as "one"
    And "acme" sends the message "second" as "two"
    Then the command "one" completes
    And the command "two" completes
    And the command "one" ended before the command "two" started
    And the command completes
    And its result text is "You said: second"
