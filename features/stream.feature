@stream
Feature: Follow and resume a session's event stream
  A client follows a session's events as Server-Sent Events; each event's
  id is its sequence number.  A client that loses its connection
  reconnects with Last-Event-ID and gets what it missed: no gap, no
  duplicate.

  Background:
    Given a token for tenant "acme"
    And "acme" has a session

  Scenario: A client that disconnects resumes where it stopped
    When "acme" follows its session's event stream
    And "acme" sends the message "before the cut" as "before"
    Then the stream delivers the "command.completed" event of the command "before"
    And the stream asks clients to retry after 1000 ms
    When the client disconnects
    And "acme" sends the message "while away" as "away"
    And the command "away" completes
    And the client reconnects with the last event id it saw
    And "acme" sends the message "after the return" as "after"
    Then the stream delivers the "command.completed" event of the command "after"
    And the second connection began right after the last event of the first
    And across its connections the client saw every event of the session once, in order

  Scenario Outline: A malformed Last-Event-ID is refused
    When "acme" follows its session's event stream from Last-Event-ID "<id>"
    Then the answer is a 400 problem "invalid_last_event_id"

    Examples:
      | id   |
      | -1   |
      | 1x   |
